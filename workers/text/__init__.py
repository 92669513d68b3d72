"""Text: the tokenizer and its WordPiece learner, corpora as token arrays, masking, token overlap."""
