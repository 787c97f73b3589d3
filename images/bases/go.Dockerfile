# GO_IMAGE on a machine with no public registry: this machine's own Go installation (the context's
# go/, its GOROOT), laid out as golang's image does: /usr/local/go, GOPATH /go, GOTOOLCHAIN=local
# (the build uses exactly this Go and never downloads another).
ARG BASE
FROM ${BASE}
COPY go /usr/local/go
ENV GOPATH=/go GOTOOLCHAIN=local \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
