"""Models: BERT builders, stacked and packed members, precision and devices."""
