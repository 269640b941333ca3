"""The random numbers a net estimator owns (private).

torch's layers draw from torch's global generators; :class:`NetRandomState`
is the estimator's own state, lent to them only while a fit needs it, under a
process-wide lock.
"""

import contextlib
import threading

import torch
from torch import nn

from ._net_data import resolved_device

#: Held while torch's global generators hold an estimator's state
#: (:meth:`NetRandomState.active`): fits in other threads wait instead of
#: drawing from (or resetting) the same global state.
GLOBAL_RNG_LOCK = threading.RLock()


class NetRandomState:
    """The random numbers an estimator owns: a CPU generator, and its GPU's state.

    torch's layers and initializers draw from torch's global generators
    (``nn.Linear``'s initialization, ``nn.Dropout``); only some functions
    take a ``generator=`` argument. So the estimator keeps its own state
    here: the batch order is drawn from :attr:`generator` directly
    (``torch.randperm(generator=...)``), and code that can only draw from
    the global generators (building the module, a training step of a module
    with dropout) runs inside :meth:`active`, which lends the global
    generators this state under a process-wide lock and takes it back,
    leaving the global state as it found it. A fresh instance seeded with
    ``s`` draws the numbers ``torch.manual_seed(s)`` would.

    Parameters
    ----------
    seed : int
        The seed of the CPU generator (and of the GPU's, when ``device`` is
        a CUDA device).
    device : torch.device
        Where training runs: a CUDA device's generator state is owned too.
    """

    def __init__(self, seed, device):
        self.generator = torch.Generator().manual_seed(seed)
        self.cuda_index = None
        self.cuda_state = None
        if device.type == "cuda":
            self.cuda_index = resolved_device(device).index
            cuda = torch.Generator(device=torch.device("cuda", self.cuda_index))
            self.cuda_state = cuda.manual_seed(seed).get_state()

    def get_state(self):
        """The generators' state, to hand back to :meth:`set_state`.

        Returns
        -------
        state : tuple
            The CPU generator's state and the GPU's (or None).
        """
        return self.generator.get_state(), self.cuda_state

    def set_state(self, state):
        """Go back to a state returned by :meth:`get_state`.

        Parameters
        ----------
        state : tuple
            As returned by :meth:`get_state`.
        """
        self.generator.set_state(state[0])
        self.cuda_state = state[1]

    @contextlib.contextmanager
    def active(self):
        """Lend torch's global generators this state for the block, then take it back.

        Yields
        ------
        None
        """
        with GLOBAL_RNG_LOCK:
            saved_cpu = torch.get_rng_state()
            saved_cuda = None
            if self.cuda_state is not None:
                saved_cuda = torch.cuda.get_rng_state(self.cuda_index)
                torch.cuda.set_rng_state(self.cuda_state, self.cuda_index)
            torch.set_rng_state(self.generator.get_state())
            try:
                yield
            finally:
                self.generator.set_state(torch.get_rng_state())
                torch.set_rng_state(saved_cpu)
                if saved_cuda is not None:
                    self.cuda_state = torch.cuda.get_rng_state(self.cuda_index)
                    torch.cuda.set_rng_state(saved_cuda, self.cuda_index)


#: torch layers whose ``forward`` draws random numbers in training mode.
RANDOM_LAYERS = tuple(
    getattr(nn, name)
    for name in (
        "Dropout Dropout1d Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout RReLU "
        "FractionalMaxPool2d FractionalMaxPool3d MultiheadAttention"
    ).split()
    if hasattr(nn, name)
)


def draws_random_numbers(module):
    """Whether a training-mode forward of ``module`` may draw random numbers.

    Yes when a submodule is one of torch's random layers (dropout...), or is
    not one of torch's own layers and does not declare
    ``draws_random_numbers = False`` in its class.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    draws : bool
    """
    for sub in module.modules():
        cls = type(sub)
        if isinstance(sub, RANDOM_LAYERS):
            return True
        if vars(cls).get("draws_random_numbers") is False:
            continue
        if not cls.__module__.startswith("torch.nn."):
            return True
    return False


def whole_fit_random_state(net):
    """Under Accelerate, the whole epoch loop runs with the estimator's random state.

    Accelerate's data loaders and processes draw from torch's global
    generators; one process per device means no other fit shares them.
    Elsewhere only a training step of a module that draws random numbers
    borrows it (:meth:`NetRandomState.active`).
    """
    if getattr(net, "accelerator", None) is None:
        return contextlib.nullcontext()
    return net.rng.active()
