"""ragloom-hashing: a feature-hashing encoder, a brute-force numpy index and a keyword retriever
for ragloom."""
