"""Proof that a scene was left alone (own module: see Testing/shared_data.py for why not conftest)."""


def scene_snapshot(scene) -> dict:
    """Node ID -> (class, name, modification time) of every node: to prove nothing changed."""
    out = {}
    for n in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(n)
        out[node.GetID()] = (node.GetClassName(), node.GetName(), node.GetMTime())
    return out
