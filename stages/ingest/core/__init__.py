"""The pure core of the ingest stage: no sockets, no files, no clock."""
