"""Serving a trained model over HTTP: the API, the web page at ``/``, metrics.

``semseg serve`` builds the app with :func:`semseg.serve.app.create_app` from a
:class:`~semseg.inference.predictor.Predictor` and :class:`~semseg.serve.settings.ServeSettings`
and runs it with uvicorn. Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""
