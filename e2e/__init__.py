"""End-to-end tests and the deployment helpers they share with the unit tests."""
