"""Provenance-tracked facts: subject-predicate-object triples that can change over time."""

from hirag_oz.facts.models import Anchor, Fact, Inserted, NewFact, fact_hash, fact_id
from hirag_oz.facts.store import FactPage, FactQuery, FactStore

__all__ = [
    "Anchor",
    "Fact",
    "FactPage",
    "FactQuery",
    "FactStore",
    "Inserted",
    "NewFact",
    "fact_hash",
    "fact_id",
]
