"""Reverse-mode automatic differentiation on the IR.

``gradients(graph, loss, wrt)`` appends to ``graph`` the ops that compute the gradient of the
scalar ``loss`` with respect to each value in ``wrt`` and returns their names. Each op's
gradient comes from its registry entry's ``vjp`` facet (written with other graphc ops in the
op's family module); ops marked ``not_differentiable`` pass no gradient. The result is an
ordinary graph that every backend can run.
"""

from graphc.autodiff.core import GradContext, NotDifferentiableError, gradients

__all__ = ["GradContext", "NotDifferentiableError", "gradients"]
