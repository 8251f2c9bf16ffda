"""The kubelet device plugin for farcuda pools (``farcuda-device-plugin``, see plugin.py).

``api.proto`` is the kubelet's device-plugin API, v1beta1, as Kubernetes publishes it;
``api_pb2.py`` and ``api_pb2_grpc.py`` are generated from it (tools/gen_deviceplugin.py) and
need the ``cluster`` extra (grpcio, protobuf). Importing this package imports neither.
"""
