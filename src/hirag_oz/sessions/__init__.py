"""Conversation sessions: messages in, the next prompt out (DESIGN.md section 9)."""

from hirag_oz.sessions.records import SessionRecord, SessionRecords
from hirag_oz.sessions.service import ROLES, Appended, Message, NewMessage, Sessions

__all__ = [
    "ROLES",
    "Appended",
    "Message",
    "NewMessage",
    "SessionRecord",
    "SessionRecords",
    "Sessions",
]
