"""The evaluation's maths: the custom TFMA metrics, their statistics and bootstrap intervals, and
the metric names every reader of an evaluation shares."""
