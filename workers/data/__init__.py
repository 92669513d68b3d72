"""Datasets: the data root, where a dataset lives and how its columns are read, task splits, FewRel, predict's input."""
