"""Model hosting: the backend interface and catalogue, the models a process hosts, admission, batching, streaming."""
