"""Everything the course did not have, beside its six files. The course files import from here; nothing
here imports them (the model, the environment and the course's functions are passed in where needed).

    atari         environment ids of today's ALE, the opt-in life-loss and fire-reset wrappers
    fast_frames   the course's frame processing, bit for bit, at a fraction of the cost
    large_frames  --frame-size 80 on the course's own path: its frames without their last shrink to 42x42
    sizes         the network's opt-in sizes (--frame-size, --lstm-size), as the run's params and checkpoints carry them
    fast_rollout  acting that keeps its activations, and the backward pass written out for them
    fast_adam     SharedAdam's step in PyTorch's fused kernel
    fast_worker   the worker's loop on the three above: the default (--rollout fast)
    schedule      the learning rate: the course's constant one, or the paper's linear decay (--lr-decay-until)
    cli           the course's Params from the command line, the defaults of what a learner's Params lacks
    recipes       whole training set-ups under one name (--recipe), as data
    shared        the shared model and SharedAdam as main.py builds them, for the code that builds them elsewhere
    errors        an error's message in one line
    checkpoints   the checkpoint format: written atomically, loaded safely
    run_record    config.json, progress.csv and the learning curve
    dashboard     the run's TensorBoard charts, against agent steps
    memory        the run's memory estimated from measured figures; one that would not fit stops before its children
    supervision   the main process's side of a run: resumed, then the loop that hands events to the jobs until a stop
    pool          the run's child processes on one machine: started, read without blocking, replaced when they die
    restarts      the one restart rule (deaths within a window), for the children and a cluster's machines alike
    links         a child's side of the run: its step count, the stop flag, the pipe for its events
    events        the run's typed events, from the children, the pool and a cluster's machines
    jobs          the listeners around the loop: stopping, saving, the record, the status line
    best          best.pt: the weights of the test process's best mean score
    cluster       the same run over the machines of a Ray cluster (--ray-address), driven from main.py's process
    cluster_actors  what runs on those machines: one Hogwild group per machine
    overlay       the drawing of what the agent sees and decides, beside the game screen
    videos        the MP4 recorder of the agent's episodes, with the optional overlay
    monitor       create_atari_env(env_id, video=True): the test process's videos, in gym's Monitor's place
    stall         the stuck-agent guard: when an episode of a game that waits for FIRE has stalled
    evaluation    the evaluation command (python test.py --checkpoint ...)
    frame_stats   the frame normaliser's statistics in checkpoints (worker 0's), for evaluating with them frozen
"""
