"""The stream service (SPEC sections 4 and 5): per-user SSE streams and the history API.

``create_app`` (in ``shared.stream.app``) builds the ASGI application that
``functions/stream/main.py`` exposes.
"""
