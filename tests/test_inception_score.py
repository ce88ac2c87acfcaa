"""Inception Score: the formula against torchmetrics and closed forms, and the logits it uses
against the Inception network's own classifier (random weights: the real file is not here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.inception import InceptionScore

from ganaug.quality.inception import (
    FID_FEATURE_DIM,
    INCEPTION_CLASSES,
    fid_inception_architecture,
    inception_score,
    load_inception_fc,
)


def test_matches_torchmetrics_on_the_same_logits():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (200, 16))
    fc = rng.normal(0, 0.5, (12, 16))
    logits = torch.from_numpy(features @ fc.T)
    metric = InceptionScore(feature=torch.nn.Identity(), splits=5)  # feature network = identity on logits
    metric.update(logits)
    torch.manual_seed(0)
    expected_mean, expected_std = metric.compute()  # shuffles with torch.randperm, then splits
    torch.manual_seed(0)
    order = torch.randperm(200).numpy()
    mean, std = inception_score(features[order], fc, splits=5)
    assert mean == pytest.approx(float(expected_mean), rel=1e-6)
    assert std == pytest.approx(float(expected_std) * np.sqrt(4 / 5), rel=1e-5)  # torchmetrics: ddof=1; original: ddof=0


def test_closed_forms():
    k = 10
    fc = np.eye(k) * 50.0  # logits = 50 * one-hot: near-certain predictions
    confident_and_diverse = np.tile(np.eye(k), (20, 1))  # every class equally often
    assert inception_score(confident_and_diverse, fc, splits=1)[0] == pytest.approx(k, rel=1e-3)
    collapsed = np.tile(np.eye(k)[:1], (200, 1))  # always the same class
    assert inception_score(collapsed, fc, splits=1)[0] == pytest.approx(1.0, abs=1e-6)
    uncertain = np.zeros((200, k))  # uniform p(y|x)
    assert inception_score(uncertain, fc, splits=4) == pytest.approx((1.0, 0.0), abs=1e-9)


def test_logits_are_the_inception_classifier_without_its_bias(tmp_path):
    torch.manual_seed(0)
    network = fid_inception_architecture().eval()
    path = tmp_path / "inception.pth"
    torch.save(network.state_dict(), path)
    fc = load_inception_fc(path)
    assert fc.shape == (INCEPTION_CLASSES, FID_FEATURE_DIM)
    pool3 = torch.randn(3, FID_FEATURE_DIM)
    expected = network.fc(pool3) - network.fc.bias  # torchvision's head on pool3, bias removed
    np.testing.assert_allclose(pool3.double().numpy() @ fc.T, expected.detach().double().numpy(), rtol=1e-4, atol=1e-4)


def test_refuses_a_file_without_the_classifier(tmp_path):
    path = tmp_path / "pool_only.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, path)
    with pytest.raises(ValueError, match="fc.weight"):
        load_inception_fc(path)
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((3, 4)), np.zeros((5, 4)), splits=4)
