"""The shared model and optimizer as main.py builds them (the course's lines there), for the code that
builds them elsewhere: a cluster's machines, the tests and the benchmarks. The classes come in as
arguments: this package never imports the course's files."""

from a3c_extras import sizes


def shared_model_and_optimizer(params, env, model_class, optimizer_class):
    """model_class(ActorCritic) of the run's sizes (--frame-size, --lstm-size) on env's spaces and
    optimizer_class(SharedAdam) on its parameters, both in shared memory; no optimizer with --no-shared
    (each worker makes its own Adam)."""
    shared_model = model_class(env.observation_space.shape[0], env.action_space, **sizes.of(params))
    shared_model.share_memory()
    if getattr(params, "no_shared", False):
        return shared_model, None
    optimizer = optimizer_class(shared_model.parameters(), lr=params.lr)
    optimizer.share_memory()
    return shared_model, optimizer
