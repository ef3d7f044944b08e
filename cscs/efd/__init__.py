"""The Engineering and Facility Database (EFD): everything said on the bus, recorded.

``records`` says what one recorded message is and how it is named in the observatory's
EFD; ``store`` is the interface every store implements (the embedded SQLite file, or
InfluxDB 1.x). Nothing in this package imports a component: the EFD writer, the header
service (rebuilding a header) and the ``cscs efd`` command all stand on it.
"""
