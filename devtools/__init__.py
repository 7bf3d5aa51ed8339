"""Development support shared by the tests and the benchmark (not part of the shipped package)."""
