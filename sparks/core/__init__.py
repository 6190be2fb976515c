"""The method: the binary codebook, the Gumbel-Sinkhorn/PSTE selection, the weight methods (Sparks and its
baselines), the sub-bit conv layer, and ``convert`` for any model. Data flows codebook → selection → methods →
layers → convert."""

from sparks.core import snn  # noqa: F401  (importing it registers the "snn" weight method)
