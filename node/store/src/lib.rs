//! The replicated store (filled in by the storage work).
