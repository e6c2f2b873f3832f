"""Builders turn a BuildRequest into a pushed image: buildah on the local stack, ACR runs in the cloud."""
