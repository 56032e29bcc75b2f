"""The lab's exact peak-tensor-bytes tracker (the schedules' peaks it measures: tests/test_perf.py)."""

import torch

from dragon_lab.tensor_peak import TensorPeak

MB = 1_000_000


def test_counts_what_is_allocated_and_uncounts_what_is_freed():
    before = torch.ones(1000, 1000)  # made before: not counted, and neither are its views
    with TensorPeak() as tp:
        a = torch.empty(MB // 4)  # 1 MB
        b = torch.empty(2 * MB // 4)  # 2 MB: 3 MB held
        del a  # 2 MB held
        c = b.view(-1, 2)  # a view: no new storage
        b.add_(1)  # in place: none either
        v = before.t()
        del b  # c still holds b's storage
        assert tp.now == 2 * MB
        d = c.sum()  # 4 bytes
        del c
        assert tp.now == 4
    assert tp.peak == 3 * MB
    del d, v


def test_counts_what_autograd_keeps_and_backward_allocates():
    x = torch.randn(MB // 4, requires_grad=True)  # 1 MB, made before
    with TensorPeak() as tp:
        y = (x * 2).relu()  # x * 2 is freed once relu has its result, which autograd keeps
        assert tp.now == MB
        y.sum().backward()  # the gradient of y, of x * 2, then x.grad (1 MB each, not all at once)
        assert tp.now == 2 * MB  # y and x.grad
        del y
    assert tp.now == MB and 3 * MB <= tp.peak <= 4 * MB + 64
