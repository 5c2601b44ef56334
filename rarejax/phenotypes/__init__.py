"""A note's HPO terms and the classical rankers over them: concept recognition (rarejax's own and
FastHPOCR), the disease × term index, Resnik / likelihood ratio / case-based / fusion rankers.

Core library code that data/ (targets, corpus, soft targets), evaluate/, rers/ and diagnose use;
it imports none of them.
"""
