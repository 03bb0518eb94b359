"""rnn_jax: the recurrent neural network of the classic formulation as pure JAX functions.

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)        stacked: W_a = [W_aa | W_ax]
    ŷ<t> = g_y(W_ya a<t> + b_y)

See README.md for the task families and the API contract. Names that only make sense in
their module stay there: ``rnn_jax.seq2seq.encode``, ``rnn_jax.generate.sample``,
``rnn_jax.long.chunk_loss``.
"""

from rnn_jax import interop as interop
from rnn_jax._checks import lengths_to_mask as lengths_to_mask
from rnn_jax.batching import Batch as Batch
from rnn_jax.batching import bucket_batches as bucket_batches
from rnn_jax.batching import iterate_batches as iterate_batches
from rnn_jax.batching import mask_to_lengths as mask_to_lengths
from rnn_jax.batching import pad_batch as pad_batch
from rnn_jax.batching import padding_fraction as padding_fraction
from rnn_jax.cell import CellParams as CellParams
from rnn_jax.cell import rnn_cell as rnn_cell
from rnn_jax.crf import CRFParams as CRFParams
from rnn_jax.crf import crf_decode as crf_decode
from rnn_jax.crf import crf_log_likelihood as crf_log_likelihood
from rnn_jax.crf import crf_log_partition as crf_log_partition
from rnn_jax.crf import crf_sequence_score as crf_sequence_score
from rnn_jax.crf import init_crf as init_crf
from rnn_jax.ctc import ctc_greedy_decode as ctc_greedy_decode
from rnn_jax.ctc import ctc_loss as ctc_loss
from rnn_jax.ctc import ctc_prefix_beam_search as ctc_prefix_beam_search
from rnn_jax.ctc import rnn_ctc_loss as rnn_ctc_loss
from rnn_jax.generate import BeamSearchResult as BeamSearchResult
from rnn_jax.generate import LMState as LMState
from rnn_jax.generate import beam_search as beam_search
from rnn_jax.generate import greedy_decode as greedy_decode
from rnn_jax.generate import lm_initial_state as lm_initial_state
from rnn_jax.generate import lm_step as lm_step
from rnn_jax.long import rnn_loss_remat as rnn_loss_remat
from rnn_jax.long import truncated_bptt as truncated_bptt
from rnn_jax.lookup import column_lookup as column_lookup
from rnn_jax.losses import masked_mean_squared_error as masked_mean_squared_error
from rnn_jax.losses import (
    masked_sigmoid_binary_cross_entropy as masked_sigmoid_binary_cross_entropy,
)
from rnn_jax.losses import masked_softmax_cross_entropy as masked_softmax_cross_entropy
from rnn_jax.metrics import AccuracyCounts as AccuracyCounts
from rnn_jax.metrics import ConfusionCounts as ConfusionCounts
from rnn_jax.metrics import accuracy_counts as accuracy_counts
from rnn_jax.metrics import binary_confusion_counts as binary_confusion_counts
from rnn_jax.metrics import binary_precision_recall_f1 as binary_precision_recall_f1
from rnn_jax.metrics import masked_accuracy as masked_accuracy
from rnn_jax.network import check_params as check_params
from rnn_jax.network import merge_directions as merge_directions
from rnn_jax.network import rnn_apply as rnn_apply
from rnn_jax.network import rnn_classify as rnn_classify
from rnn_jax.network import rnn_layers as rnn_layers
from rnn_jax.params import HeadParams as HeadParams
from rnn_jax.params import LayerParams as LayerParams
from rnn_jax.params import RNNParams as RNNParams
from rnn_jax.params import SplitLayerParams as SplitLayerParams
from rnn_jax.params import StackParams as StackParams
from rnn_jax.params import count_params as count_params
from rnn_jax.params import init_head as init_head
from rnn_jax.params import init_layer as init_layer
from rnn_jax.params import init_rnn as init_rnn
from rnn_jax.params import split_layer as split_layer
from rnn_jax.params import stack_layer as stack_layer
from rnn_jax.recurrence import rnn_unroll as rnn_unroll
from rnn_jax.seq2seq import DecoderState as DecoderState
from rnn_jax.seq2seq import Seq2SeqParams as Seq2SeqParams
from rnn_jax.seq2seq import decoder_initial_state as decoder_initial_state
from rnn_jax.seq2seq import decoder_step as decoder_step
from rnn_jax.seq2seq import init_seq2seq as init_seq2seq
from rnn_jax.seq2seq import seq2seq_apply as seq2seq_apply
from rnn_jax.seq2seq import seq2seq_loss as seq2seq_loss
from rnn_jax.seq2seq import shift_right as shift_right
from rnn_jax.stack import head_apply as head_apply
from rnn_jax.stack import stack_step as stack_step
from rnn_jax.stack import stack_unroll as stack_unroll
from rnn_jax.vocab import Vocabulary as Vocabulary
from rnn_jax.vocab import char_tokenize as char_tokenize
from rnn_jax.vocab import one_hot as one_hot
from rnn_jax.vocab import tokenize as tokenize

__version__ = "0.1.0"

# Submodules with heavier dependencies (Orbax, tqdm, matplotlib: the `train` extra) load on
# first use, so `import rnn_jax as rj; rj.train.fit` works and `import rnn_jax` stays light.
_LAZY_SUBMODULES = ("checkpoint", "parallel", "progress", "train")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"rnn_jax.{name}")
    raise AttributeError(f"module 'rnn_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "interop",
    "AccuracyCounts",
    "Batch",
    "BeamSearchResult",
    "CRFParams",
    "CellParams",
    "ConfusionCounts",
    "DecoderState",
    "HeadParams",
    "LMState",
    "LayerParams",
    "RNNParams",
    "Seq2SeqParams",
    "SplitLayerParams",
    "StackParams",
    "Vocabulary",
    "accuracy_counts",
    "beam_search",
    "binary_confusion_counts",
    "binary_precision_recall_f1",
    "bucket_batches",
    "char_tokenize",
    "check_params",
    "count_params",
    "crf_decode",
    "crf_log_likelihood",
    "crf_log_partition",
    "crf_sequence_score",
    "ctc_greedy_decode",
    "ctc_loss",
    "column_lookup",
    "ctc_prefix_beam_search",
    "decoder_initial_state",
    "decoder_step",
    "greedy_decode",
    "head_apply",
    "init_crf",
    "init_head",
    "init_layer",
    "init_rnn",
    "init_seq2seq",
    "iterate_batches",
    "lengths_to_mask",
    "lm_initial_state",
    "lm_step",
    "mask_to_lengths",
    "masked_accuracy",
    "masked_mean_squared_error",
    "masked_softmax_cross_entropy",
    "merge_directions",
    "one_hot",
    "pad_batch",
    "padding_fraction",
    "rnn_apply",
    "rnn_cell",
    "rnn_classify",
    "rnn_ctc_loss",
    "rnn_layers",
    "rnn_loss_remat",
    "rnn_unroll",
    "seq2seq_apply",
    "seq2seq_loss",
    "shift_right",
    "split_layer",
    "stack_layer",
    "stack_step",
    "stack_unroll",
    "tokenize",
    "truncated_bptt",
]
