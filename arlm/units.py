"""Units: arlm computes in nats (natural log); reported metrics convert to bits with ``LN2``."""

import math

LN2 = math.log(2.0)  #: nats per bit: bits = nats / LN2
