"""How the house says things to people: the one wording of each fact about a model, and the set-up
and stylesheet its HTML pages share."""
