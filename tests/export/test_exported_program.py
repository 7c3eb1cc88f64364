"""torch.export archives: metadata inside, outputs equal to eager, dynamic sizes where they hold."""

from __future__ import annotations

import pytest
import torch

from rsvit.export import compare_models, load_program, real_inputs
from rsvit.export.api import export_model


@pytest.mark.parametrize("task", ["segmentation", "regression"])
def test_program_matches_eager_and_carries_metadata(task, tiny_models, data_dir, tmp_path):
    model, written = export_model(tiny_models[task], tmp_path / f"{task}.pt2", format="exported-program")
    program, meta = load_program(tmp_path / f"{task}.pt2")
    assert meta == written and meta.exporter == "torch.export"
    batches = real_inputs(meta.spec, meta.weights, data_dir, meta.window)
    result = compare_models(model, program.module(), batches)
    assert result.span > 0 and result.relative <= 1e-4, str(result)
    if meta.dynamic_spatial:
        other = real_inputs(meta.spec, meta.weights, data_dir, (96, 128), count=1)
        assert compare_models(model, program.module(), other).relative <= 1e-4
    else:
        assert meta.static_reason
    with torch.no_grad():
        assert program.module()(torch.cat([b[0] for b in batches])).shape[0] == len(batches)
