"""The shared kernel: what the contexts, facts and documents layers all need.

Scope and ids, the clock, hybrid fusion, BM25 collection set-up, text checks and stopwords.
It depends only on the error types and the store port, so every layer above can use it
without importing another layer's internals. Import its modules directly; this package
re-exports nothing.
"""
