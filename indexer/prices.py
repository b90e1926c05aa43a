"""On-demand list prices per GPU type and for a CPU node: what an estimate charges when the
config names no price (``cost.gpu_hour_usd``).

Every entry names its provider, the offer it was read from and when. These are public on-demand
list prices, not contract, reserved or spot prices, and they change: set ``cost.gpu_hour_usd`` and
``cost.gpu_hour_source`` to your own price, which always wins over this table.

A CPU node is priced per vCPU-hour, times the vCPUs the estimate's throughput assumes (this
machine's CPUs, as ``os.cpu_count()`` reports them).
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2025 (read from the providers' public pricing pages; not re-checked since)"
"""When the table's prices were read: check them before relying on a figure."""


@dataclass(frozen=True)
class ListPrice:
    """A public on-demand price per hour of one GPU (or one vCPU for ``cpu``), and where it is from."""

    usd_per_hour: float
    source: str


GPU_HOUR_LIST_PRICES: dict[str, ListPrice] = {
    "H100": ListPrice(2.99, "Lambda on-demand 8x H100 SXM, per GPU-hour, lambda.ai/pricing, 2025"),
    "H100-PCIE": ListPrice(2.49, "Lambda on-demand 1x H100 PCIe, lambda.ai/pricing, 2025"),
    "H200": ListPrice(3.50, "low end of the specialty-cloud on-demand H200 SXM range ($3.50-4.50 per GPU-hour) "
                            "in mercatus-ai.com/blog/cloud-gpu-pricing, May 2026"),
    "A100": ListPrice(1.29, "Lambda on-demand 1x A100 SXM 40 GB, lambda.ai/pricing, 2025"),
    "A10": ListPrice(0.75, "Lambda on-demand 1x A10, lambda.ai/pricing, 2025"),
    "L4": ListPrice(0.8048, "AWS EC2 on-demand g6.xlarge (1x L4, 4 vCPU), Linux, us-east-1, "
                            "aws.amazon.com/ec2/pricing/on-demand, 2025"),
    "T4": ListPrice(0.526, "AWS EC2 on-demand g4dn.xlarge (1x T4, 4 vCPU), Linux, us-east-1, "
                           "aws.amazon.com/ec2/pricing/on-demand, 2025"),
}
"""Per GPU-hour, keyed like ``cost.gpu_type`` (and the estimate's peak-FLOPs table)."""

CPU_VCPU_HOUR = ListPrice(0.044625, "AWS EC2 on-demand c7i.xlarge ($0.1785/h for 4 vCPU), Linux, us-east-1, "
                                    "aws.amazon.com/ec2/pricing/on-demand, 2025")
"""Per vCPU-hour of a compute-optimized CPU node."""

LIST_PRICE_SUMMARY = ", ".join(
    [f"{k} ${v.usd_per_hour:g}/h ({v.source})" for k, v in GPU_HOUR_LIST_PRICES.items()]
    + [f"cpu ${CPU_VCPU_HOUR.usd_per_hour:g} per vCPU-hour ({CPU_VCPU_HOUR.source})"])
"""The table in one line (the config reference quotes it)."""

UNSET_SOURCE = "unset"
"""``cost.gpu_hour_source`` when the config names no price."""


class NoListPrice(KeyError):
    """No price is configured and the table has none for this GPU type."""


def hour_price(gpu_type: str, configured_usd: float, configured_source: str, vcpus: int) -> tuple[float, str]:
    """(USD per GPU-hour or CPU node-hour, where the price comes from).

    A configured price (``configured_usd > 0``) wins; otherwise the list price of ``gpu_type``
    (``cpu``: ``vcpus`` x the vCPU-hour price). Raises :class:`NoListPrice` for a GPU type the
    table lacks when no price is configured."""
    if configured_usd > 0:
        src = configured_source if configured_source and configured_source != UNSET_SOURCE else "no source given"
        return configured_usd, f"configured (cost.gpu_hour_usd): {src}"
    if gpu_type == "cpu":
        n = max(1, int(vcpus))
        return (round(CPU_VCPU_HOUR.usd_per_hour * n, 6),
                f"list price: {n} vCPU x ${CPU_VCPU_HOUR.usd_per_hour}/vCPU-hour ({CPU_VCPU_HOUR.source}); "
                "set cost.gpu_hour_usd to your own")
    p = GPU_HOUR_LIST_PRICES.get(gpu_type)
    if p is None:
        raise NoListPrice(f"no list price for cost.gpu_type={gpu_type!r} (the table has cpu, "
                          f"{', '.join(sorted(GPU_HOUR_LIST_PRICES))}): set cost.gpu_hour_usd and "
                          "cost.gpu_hour_source in the config")
    return p.usd_per_hour, f"list price: {p.source}; set cost.gpu_hour_usd to your own"
