"""The tests, a package: tests/<package>/ holds the tests of rarejax/<package>/, tests/ itself those
of the top-level modules and the cross-cutting ones, tests/experiments/ those of experiments/*.py.
Every folder is a package, so test files in different folders may share a basename; shared paths
are in tests/paths.py, shared fixtures in tests/conftest.py, fixture files in tests/fixtures/."""
