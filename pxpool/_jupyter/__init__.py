"""pxpool pools in ipyparallel's JupyterLab sidebar, without a line of TypeScript.

ipyparallel's sidebar (its lab extension and the ``/ipyparallel/clusters`` handlers of
its server extension) lists the clusters its ``ClusterManager`` finds as
``IPYTHONDIR/profile_*/security/cluster-*.json``. pxpool keeps its pools in its own
runtime directory, so this feature gives each running pool a small cluster file in an
IPython profile directory of pxpool's own, ``profile_pxpool`` (:mod:`.files`), which
names :class:`.cluster.PoolCluster` as its class. ipyparallel loads that class from it:
it reads the pool's state and engine count from pxpool's record each time the sidebar
asks, its stop is ``pxpool stop NAME`` (``Pool.stop_by_name``: the whole teardown, also
of batch jobs, shared memory, cgroups and forwards), and the file goes when the pool
stops. One more file per pxpool profile that could start here (``new:PROFILE``: it
loads, and its provider can start here: a submit command on PATH, a Kubernetes
cluster to talk to) is a stopped entry whose Start
button runs ``pxpool start PROFILE``. A user's own IPython profiles are never
written to: a ``profile_pxpool`` that pxpool did not make is left alone, and pools are
then not listed.
"""
