"""`spot bench …`: benchmarks that print figures. Never run by the tests."""
