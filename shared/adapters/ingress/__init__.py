"""Ingress: what each sender's payload says, read into the domain's arrivals (shared.domain.events).

One module per sender: `eventgrid` (ACR through Event Grid), `distribution` (the CNCF distribution
registry's notifications), `harbor`, `dockerhub`, `github` (GitHub Packages) and `git_sources` (git
hosts' push and pull request hooks, for source triggers). Each parser takes the decoded JSON (and
the headers that name the event) and returns what arrived: a pushed image, an ignored event, or a
`Rejected` with the reason; it never raises for a sender's mistake. The trigger adapters in
functions/ hand the result to the one `receive` (shared.service_layer.ingest.Ingest.receive).
"""
