"""Sources map raw payloads from systems of record into neutral evidence. They judge nothing."""
