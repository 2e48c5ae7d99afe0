"""docs/kafka-tutorial.md is executed against the local cluster's broker: a job over
Kafka stopped with a savepoint, restored at another parallelism, and forked, exactly
once throughout (the page's own checks). Its topics are named `tutorial-*`; the page
deletes and creates them first, so it can run on a broker that ran it before."""

from __future__ import annotations

from pathlib import Path

import pytest

from dev.devcluster import ClusterEnv
from tests.docblocks import run_blocks

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]


def test_every_block_of_the_kafka_tutorial_runs(
    tmp_path: Path, cluster: ClusterEnv, kafka_bootstrap: str
) -> None:
    ran = run_blocks(
        REPO / "docs/kafka-tutorial.md",
        tmp_path,
        {"REWIND_KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    assert ran == 4
