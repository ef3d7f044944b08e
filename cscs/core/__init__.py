"""The CSC framework: life cycle, commands and acks, declared interfaces, configuration,
the bus (MQTT, or in memory for tests) and the commander's side.

It knows nothing of cameras, archives or any component: those are built on it. Read in
this order: :class:`~cscs.core.csc.BaseCsc` (``csc.py``), the declarations
(``schema.py``, ``generic.py``), :func:`~cscs.core.commands.bind` and the ack rules
(``commands.py``), :class:`~cscs.core.remote.Remote` (``remote.py``), then the
transports: what a CSC needs of one (``transport.py``), the MQTT one (``bus.py``, with
``broker_address.py``, ``refusal.py``, ``delivery.py`` and ``aiomqtt_workarounds.py``)
and the in-memory one (``testing/memory.py``).

This package imports nothing: import each name from the module that defines it, so
that a light module (``topics``, ``protocol``, ``schema``, ``states``) does not bring in
the MQTT client library.
"""
