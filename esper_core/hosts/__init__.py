"""Host networks that seeds grow in: the protocol and two reference hosts."""

from esper_core.hosts.base import HostError, HostProtocol, InjectionPoint, SegmentedHost, unique_param_count
from esper_core.hosts.cnn import CNNHost, ConvBlock, cnn_host_param_count
from esper_core.hosts.transformer import TransformerHost, transformer_host_param_count

__all__ = [
    "CNNHost",
    "ConvBlock",
    "HostError",
    "HostProtocol",
    "InjectionPoint",
    "SegmentedHost",
    "TransformerHost",
    "cnn_host_param_count",
    "transformer_host_param_count",
    "unique_param_count",
]
