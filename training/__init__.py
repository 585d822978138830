"""Training, generation and evaluation of the generators in models/."""
