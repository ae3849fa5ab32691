"""An encoder without weights: each word adds ±1 to a hashed dimension (the hashing trick)."""

import hashlib
import re

from pydantic import BaseModel, ConfigDict, Field


class HashingEncoder:
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        dim: int = Field(default=256, ge=2, description="output dimensions")
        lowercase: bool = True

    def __init__(self, params):
        self.params = params
        self.dim = params.dim
        self.fingerprint = hashlib.sha256(params.model_dump_json().encode()).hexdigest()[:16]

    @classmethod
    def from_spec(cls, params, context, **children):
        return cls(params)

    def _encode(self, texts):
        import torch

        vectors = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower() if self.params.lowercase else text)
            for word in words:
                digest = int.from_bytes(
                    hashlib.blake2b(word.encode(), digest_size=8).digest(), "big"
                )
                vectors[row, digest % self.dim] += 1.0 if digest >> 63 else -1.0
        return torch.nn.functional.normalize(vectors, dim=1)

    def encode_queries(self, texts):
        return self._encode(list(texts))

    def encode_passages(self, titles, texts):
        return self._encode([f"{title} {text}" for title, text in zip(titles, texts, strict=True)])
