"""``ragloom serve``: one pipeline behind an HTTP API (FastAPI on uvicorn).

``settings`` holds the server's knobs and limits, ``worker`` the one model thread that batches
concurrent requests into single pipeline calls, ``schemas`` the request bodies, ``openai_chat``
the OpenAI chat-completions format, ``errors`` the JSON errors, ``stats`` what ``/metrics``
shows, ``app`` the endpoints and ``server`` the process around them (warm-up, socket, signals).
Importing this package loads neither FastAPI nor torch; its modules do.
"""
