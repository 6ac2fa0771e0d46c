"""The annotation server (``samkit serve``): a FastAPI app over the data engine (:mod:`samkit.engine`).

:func:`samkit.server.app.create_app` builds it from :class:`samkit.server.settings.Settings`; one router
per area under :mod:`samkit.server.routers` (auth and users, projects and labels, images, annotations,
predict, jobs). Every endpoint but ``/api/health`` and ``/api/auth/login`` needs a bearer token.
"""
