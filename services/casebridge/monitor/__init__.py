"""The secretariat's monitor: figures from ``cb.audit`` (metadata only), its web page and metrics,
and the verification of every sender's hash chain (``casebridge audit verify``)."""
