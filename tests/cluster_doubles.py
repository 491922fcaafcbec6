"""Stand-ins for the cluster's actors, in a module of their own that Ray's workers import (the cluster tests put
tests/ on their PYTHONPATH)."""

from a3c_extras.cluster_actors import Group


class FailingGroup(Group):
    """A group whose syncs raise: a failure of the group's own call, which leaves its process alive."""

    def sync(self, weights=None):
        raise OSError("no room for the global weights")
