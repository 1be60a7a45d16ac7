"""The workflow optimization engine: makespan distributions and bottlenecks by Monte Carlo in the simulator's
list scheduling (`montecarlo`), the shared graph featurisation (`graph`), a GNN that predicts them (`gnn`), and
what-if recommendations checked in the simulator before they are offered (`analysis`)."""
