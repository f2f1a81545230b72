"""The dashboard: a page per pool in the Jupyter server the user runs, and task streams.

A pool lives in the process that started or attached it (often a notebook's kernel),
not in the Jupyter server. That process publishes (:mod:`.publisher`): while a page is
open it writes the pool's health, its recent task events and its running maps to a file
in the pool's private runtime directory, and runs the actions the page asks for through
request files there. The server extension (:mod:`.server`) reads and writes only those
files, under Jupyter's own authentication; file permissions (the directory is 0700,
files 0600, as for the pool's connection files) keep other users out. Both sides draw
the task stream with the same figure (:mod:`.stream`), plotly's.
"""
