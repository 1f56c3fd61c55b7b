"""The synthetic default data set generator."""
