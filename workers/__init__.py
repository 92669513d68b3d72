"""What runs inside Ray actors: data, tokenizer, models, training loops, voting, checkpoints."""
