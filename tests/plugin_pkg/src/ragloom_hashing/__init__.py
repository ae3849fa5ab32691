"""ragloom-hashing: a feature-hashing encoder and a brute-force numpy index for ragloom."""
