"""`committee claims SUITE`: the papers' claims measured over seed blocks, each with a verdict."""
