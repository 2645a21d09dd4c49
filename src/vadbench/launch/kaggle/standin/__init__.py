"""A local Kaggle: an HTTP stand-in for the service that the real, unpatched `kaggle` client talks to.

`vadbench kaggle standin` answers the requests the client (kaggle 2.2, transport kagglesdk) sends, with the
service's rules, and runs each pushed kernel in the rehearsal's /kaggle replica. `wire` is the HTTP side
(routing, auth, uploads, file downloads), `world` the accounts' state and the event log, `kernel_api` and
`dataset_api` the service's answers, `blobs` the upload protocol, `executor` the kernels' sessions.

How a client reaches it: kagglesdk alone (`KAGGLE_API_ENVIRONMENT=TEST`) calls http://localhost:7777, the
default port. The `kaggle` client (2.2.5) ignores TEST (its KaggleApi passes an explicit environment: PROD, or
LOCAL for `KAGGLE_API_ENVIRONMENT=LOCALHOST`, which is http://localhost:80), so it is pointed here with
`KAGGLE_API_ENVIRONMENT=LOCALHOST` and the standard proxy variables of `requests` (`http_proxy` to the
stand-in's port; `https_proxy` too, so a forgotten variable is refused here instead of reaching Kaggle):
`wire.client_env` gives them.
"""
