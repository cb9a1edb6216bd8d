"""The benchmark of issue 5: the service against its HTTP floor and its backend floor (`just bench`)."""
