urlpatterns: list = []  # the API issue work fills this in
