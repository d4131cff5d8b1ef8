"""textintent: a liveml task of its own package. Short customer-support messages in, their
intent (billing, delivery, ...) out.

It shows what a third-party task looks like: it registers under the entry-point group
`liveml.tasks` (see pyproject.toml) and reaches liveml only through the public contract
(`liveml.tasks.base.Task`) and liveml's public framework modules. Nothing here is imported by
liveml itself, and importing this package stays cheap (torch loads on first use).
"""
