"""rnn_jax: the recurrent neural network of the classic formulation as pure JAX functions.

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)        stacked: W_a = [W_aa | W_ax]
    ŷ<t> = g_y(W_ya a<t> + b_y)

See README.md for the task families and the API contract.
"""

from rnn_jax.cell import CellParams as CellParams
from rnn_jax.cell import rnn_cell as rnn_cell
from rnn_jax.network import check_params as check_params
from rnn_jax.network import merge_directions as merge_directions
from rnn_jax.network import rnn_apply as rnn_apply
from rnn_jax.network import rnn_classify as rnn_classify
from rnn_jax.network import rnn_layers as rnn_layers
from rnn_jax.params import HeadParams as HeadParams
from rnn_jax.params import LayerParams as LayerParams
from rnn_jax.params import RNNParams as RNNParams
from rnn_jax.params import SplitLayerParams as SplitLayerParams
from rnn_jax.params import count_params as count_params
from rnn_jax.params import init_head as init_head
from rnn_jax.params import init_layer as init_layer
from rnn_jax.params import init_rnn as init_rnn
from rnn_jax.params import split_layer as split_layer
from rnn_jax.params import stack_layer as stack_layer
from rnn_jax.recurrence import lengths_to_mask as lengths_to_mask
from rnn_jax.recurrence import rnn_unroll as rnn_unroll

__version__ = "0.1.0"

__all__ = [
    "CellParams",
    "HeadParams",
    "LayerParams",
    "RNNParams",
    "SplitLayerParams",
    "check_params",
    "count_params",
    "init_head",
    "init_layer",
    "init_rnn",
    "lengths_to_mask",
    "merge_directions",
    "rnn_apply",
    "rnn_cell",
    "rnn_classify",
    "rnn_layers",
    "rnn_unroll",
    "split_layer",
    "stack_layer",
]
