"""The driver JVM's heap, read through its management beans, for the benchmarks' memory figures.

With a local master the driver JVM also runs the executors, so its heap is
where a job's rows and cached tables live; the RSS alone cannot say how much
of it the job really holds (the collector lets the heap grow up to -Xmx).
"""

from __future__ import annotations

MIB = 2**20


class JvmHeap:
    """Peak heap used since a reset, the heap's maximum, live heap after a full GC, cached RDD sizes."""

    def __init__(self, spark):
        self.spark = spark
        factory = spark._jvm.java.lang.management.ManagementFactory
        self.memory = factory.getMemoryMXBean()
        self.pools = [p for p in factory.getMemoryPoolMXBeans() if str(p.getType()) == "Heap memory"]

    def reset_peak(self, collect_first: bool = False) -> None:
        """Start a new peak; ``collect_first`` runs a full GC before, so that G1 gives back the heap
        that earlier work (generating the input) expanded and the next RSS peak is the job's own."""
        if collect_first:
            self.spark._jvm.java.lang.System.gc()
        for pool in self.pools:
            pool.resetPeakUsage()

    def peak_mib(self) -> float:
        return sum(pool.getPeakUsage().getUsed() for pool in self.pools) / MIB

    def max_mib(self) -> float:
        return self.memory.getHeapMemoryUsage().getMax() / MIB

    def live_mib(self) -> float:
        """Heap used after a full collection: what the JVM really holds on to."""
        self.spark._jvm.java.lang.System.gc()
        return self.memory.getHeapMemoryUsage().getUsed() / MIB

    def cached_mib(self) -> tuple[float, float]:
        """Memory and disk held by cached RDDs and tables."""
        infos = list(self.spark.sparkContext._jsc.sc().getRDDStorageInfo())
        return sum(i.memSize() for i in infos) / MIB, sum(i.diskSize() for i in infos) / MIB
